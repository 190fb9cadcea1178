"""Galleries, subjects and faces (with embeddings and their model version).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "galleries",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("embedding_size", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "subjects",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column(
            "gallery_id",
            _id,
            sa.ForeignKey("galleries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("gallery_id", "external_id", name="uq_subject_gallery"),
    )
    op.create_index("ix_subjects_gallery_id", "subjects", ["gallery_id"])
    op.create_table(
        "faces",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column(
            "subject_id",
            _id,
            sa.ForeignKey("subjects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "gallery_id",
            _id,
            sa.ForeignKey("galleries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("laplacian", sa.Float(), nullable=False),
        sa.Column("laplacian_var", sa.Float(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("image_png", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_faces_subject_id", "faces", ["subject_id"])
    op.create_index("ix_faces_gallery_id", "faces", ["gallery_id"])


def downgrade() -> None:
    op.drop_index("ix_faces_gallery_id", table_name="faces")
    op.drop_index("ix_faces_subject_id", table_name="faces")
    op.drop_table("faces")
    op.drop_index("ix_subjects_gallery_id", table_name="subjects")
    op.drop_table("subjects")
    op.drop_table("galleries")

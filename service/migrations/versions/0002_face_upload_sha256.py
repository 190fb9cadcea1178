"""faces.upload_sha256: the SHA-256 of the file each face was enrolled from.

Revision ID: 0002
Revises: 0001
Create Date: 2026-07-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("faces", sa.Column("upload_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.drop_column("upload_sha256")

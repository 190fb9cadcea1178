"""End to end: ``lrfr eval`` on a pixel-baseline ONNX model, the runner and embedders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from lrfr.cli import app
from models.embedder import OnnxEmbedder
from training.degrade import CameraEffects, degrade
from training.eval.datasets import load_identity_folder, load_lfw
from training.eval.embedding import TorchModuleModel, load_model
from training.eval.metrics import interleaved_folds, kfold_accuracy
from training.eval.runner import EmbeddingStore, EvalSettings, evaluate, parse_resolutions
from training.faces import FaceLoader, crop_lfw_deepfunneled

REPORT_FILES = ("results.json", "results.csv", "table.md", "accuracy_vs_resolution.png", "roc.png")


def _invoke(*args: str) -> Result:
    quiet = [] if args[0] == "compare" else ["--no-progress"]
    result = CliRunner().invoke(app, ["eval", *args, *quiet])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_lfw_end_to_end_writes_correct_numbers(
    pixel_model: Path, lfw_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lfw"
    _invoke("lfw", "--model", str(pixel_model), "--data", str(lfw_dir), "--out", str(out),
            "--limit", "60", "--resolutions", "112,14", "--cross-resolution")
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "lfw-view2" and results["pairs"] == 60
    assert results["model"]["name"] == "pixel-baseline-8x8"
    assert set(results["resolutions"]) == {"112", "14"}
    assert set(results["cross_resolution"]) == {"14"}
    for summary in results["resolutions"].values():
        assert set(summary["tar_at_far"]) == {"0.01", "0.001"}
        assert summary["tar_at_far"]["0.001"] is None  # 30 negatives cannot measure 1e-3
    # every distinct image embedded once per resolution (cross re-uses both)
    assert results["images_embedded"] == 2 * results["images"]

    # recompute the 14 px numbers independently of the runner
    protocol = load_lfw(lfw_dir, 2).subset(60)
    embedder = OnnxEmbedder(pixel_model)
    crops = []
    for path in protocol.images:
        with Image.open(path) as image:
            crops.append(crop_lfw_deepfunneled(image))
    full = embedder.embed_pixels(np.stack(crops))
    low = embedder.embed_pixels(np.stack([degrade(c, 14) for c in crops]))
    scores = np.sum(low[protocol.left] * low[protocol.right], axis=1)
    folded = kfold_accuracy(scores, protocol.labels, protocol.folds)
    assert results["resolutions"]["14"]["accuracy"] == pytest.approx(folded.mean)
    assert results["resolutions"]["14"]["std"] == pytest.approx(folded.std)
    cross = np.sum(full[protocol.left] * low[protocol.right], axis=1)
    assert results["cross_resolution"]["14"]["accuracy"] == pytest.approx(
        kfold_accuracy(cross, protocol.labels, protocol.folds).mean
    )
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["setting"], r["resolution"]) for r in rows] == [
        ("downsampled", "112"), ("downsampled", "14"), ("cross_resolution", "14")
    ]
    table = (out / "table.md").read_text()
    assert "| 14 px |" in table and "Cross-resolution" in table


def test_scface_tinyface_survface_folder_cli(
    pixel_model: Path, tmp_path: Path, identity_image, layouts
) -> None:
    model = str(pixel_model)
    scface = layouts.scface(tmp_path / "scface_data", identity_image)
    _invoke("scface", "--model", model, "--data", str(scface), "--out", str(tmp_path / "sc"))
    results = json.loads((tmp_path / "sc" / "results.json").read_text())
    native = results["resolutions"]["native"]
    assert {native["rank1_d1"], native["rank1_d2"], native["rank1_d3"]} == {1.0}
    assert "d1 (4.20 m)" in (tmp_path / "sc" / "table.md").read_text()

    tiny = layouts.tinyface(tmp_path / "tiny_data", identity_image, with_mat=True)
    _invoke("tinyface", "--model", model, "--data", str(tiny), "--out", str(tmp_path / "tf"))
    results = json.loads((tmp_path / "tf" / "results.json").read_text())
    assert results["resolutions"]["native"]["rank1"] == 1.0
    assert results["resolutions"]["native"]["rank20"] == 1.0
    assert results["probes"] == 10 and results["gallery"] == 22

    surv = layouts.survface(tmp_path / "surv_data", identity_image, people=12)
    _invoke("survface", "--model", model, "--data", str(surv), "--out", str(tmp_path / "sv"))
    results = json.loads((tmp_path / "sv" / "results.json").read_text())
    native = results["resolutions"]["native"]
    assert results["pairs"] == 24 and native["accuracy"] == 1.0 and native["auc"] == 1.0
    assert native["tar_at_far"]["0.3"] == 1.0 and native["tar_at_far"]["0.01"] is None

    folder = layouts.identity_folder(tmp_path / "folder_data", identity_image)
    _invoke("folder", "--model", model, "--data", str(folder), "--out", str(tmp_path / "fo"),
            "-k", "1", "--resolutions", "112,7")
    results = json.loads((tmp_path / "fo" / "results.json").read_text())
    assert results["resolutions"]["112"]["rank1"] == 1.0
    assert results["resolutions"]["112"]["fnir_at_fpir"]["0.01"] is None  # 9 searches: too few
    for name in REPORT_FILES:
        assert (tmp_path / "fo" / name).is_file()

    table_path = tmp_path / "compare.md"
    result = _invoke("compare", str(tmp_path / "sc" / "results.json"),
                     str(tmp_path / "fo" / "results.json"), "--out", str(table_path),
                     "--labels", "A,B")
    table = table_path.read_text()
    assert table.splitlines()[0] == "| Dataset / resolution (%) | A | B |"
    assert "| SCface d1 rank-1 | 100.00 |  |" in table
    assert "Folder folder_data 112 px rank-1" in result.output


def test_cli_reports_bad_inputs(pixel_model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "survface", "--model", str(pixel_model), "--data",
                                 str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "positive_pairs_names.mat" in result.output
    result = runner.invoke(app, ["eval", "folder", "--model", str(pixel_model), "--data",
                                 str(tmp_path), "--out", str(tmp_path / "o"), "--down", "cubic"])
    assert result.exit_code != 0


def test_eval_of_the_blurred_branch_is_the_students_own(
    pixel_model: Path, lfw_dir: Path, tmp_path: Path
) -> None:
    from models.artifact import GateBranch, GateInfo
    from models.backbones.gated import QualityGated
    from models.export import export_onnx
    from tests.models.conftest import make_tiny_backbone

    sharp, student = make_tiny_backbone(seed=0), make_tiny_backbone(seed=1)
    # gate 0: every face is "sharp", so only --branch blurred can reach the student
    gate = GateInfo(threshold=0.0, sharp=GateBranch(name="a", source="seed 0"),
                    blurred=GateBranch(name="b", source="seed 1"), chosen_on="a test")
    export_onnx(QualityGated(sharp, student, gate=0.0), tmp_path / "gated.onnx", name="g",
                version="0", backbone_name="ir-tiny", gate=gate)
    export_onnx(student, tmp_path / "student.onnx", name="s", version="0",
                backbone_name="ir-tiny")
    runs = {}
    for name, model, extra in (("gated", "gated", ()), ("branch", "gated", ("--branch", "blurred")),
                               ("student", "student", ())):
        _invoke("lfw", "--model", str(tmp_path / f"{model}.onnx"), "--data", str(lfw_dir),
                "--out", str(tmp_path / name), "--limit", "40", "--resolutions", "112,14",
                *extra)
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert runs["branch"]["model"]["branch"] == "blurred"
    assert "branch" not in runs["gated"]["model"]
    # the artifact's calibration is the whole model's: no decisions for one branch
    assert "decisions" in runs["gated"]["resolutions"]["14"]
    assert "decisions" not in runs["branch"]["resolutions"]["14"]
    for key in ("112", "14"):
        branch, alone = runs["branch"]["resolutions"][key], runs["student"]["resolutions"][key]
        assert branch["auc"] == pytest.approx(alone["auc"], abs=1e-9)
        assert branch["accuracy"] == pytest.approx(alone["accuracy"], abs=1e-9)
    assert runs["gated"]["resolutions"]["14"]["auc"] != runs["branch"]["resolutions"]["14"]["auc"]

    runner = CliRunner()
    for model, branch, message in ((pixel_model, "blurred", "not a gated model"),
                                   (tmp_path / "gated.onnx", "sharp", "must be 'blurred'")):
        result = runner.invoke(app, ["eval", "lfw", "--model", str(model), "--data", str(lfw_dir),
                                     "--out", str(tmp_path / "o"), "--branch", branch])
        assert result.exit_code == 2 and message in result.output, result.output


def test_eval_of_a_pair_space_model_applies_its_rule(lfw_dir: Path, tmp_path: Path) -> None:
    from models.artifact import GateBranch, GateInfo
    from models.backbones.gated import QualityGated
    from models.export import export_onnx
    from models.quality import laplacian_score
    from models.quantize import write_pair_space
    from tests.models.conftest import make_tiny_backbone

    # the bundled model's gate: LFW crops at 112 px mostly above it, at 14 px below
    gate = GateInfo(threshold=4.5795, sharp=GateBranch(name="a", source="seed 0"),
                    blurred=GateBranch(name="b", source="seed 1"), chosen_on="a test")
    source, pair = tmp_path / "gated.onnx", tmp_path / "pair.onnx"
    export_onnx(QualityGated(make_tiny_backbone(seed=0), make_tiny_backbone(seed=1),
                             gate=gate.threshold), source, name="g", version="0",
                backbone_name="ir-tiny", gate=gate)
    protocol = load_lfw(lfw_dir, 2).subset(40)
    crops = []
    for path in protocol.images:
        with Image.open(path) as image:
            crops.append(crop_lfw_deepfunneled(image))
    full, low = np.stack(crops), np.stack([degrade(c, 14) for c in crops])
    write_pair_space(source, pair, np.concatenate([full, low]))
    _invoke("lfw", "--model", str(pair), "--data", str(lfw_dir), "--out", str(tmp_path / "o"),
            "--limit", "40", "--resolutions", "112,14", "--cross-resolution")
    results = json.loads((tmp_path / "o" / "results.json").read_text())

    def rule(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """dlib's (the sharp branch's) cosine when both are sharp, else the students'."""
        served, student = OnnxEmbedder(source), OnnxEmbedder(source, branch="blurred")
        g1, g2 = served.embed_pixels(first), served.embed_pixels(second)
        z1, z2 = student.embed_pixels(first), student.embed_pixels(second)
        sharp = np.array([laplacian_score(a).laplacian >= gate.threshold
                          and laplacian_score(b).laplacian >= gate.threshold
                          for a, b in zip(first, second, strict=True)])
        return np.where(sharp, np.sum(g1 * g2, axis=1), np.sum(z1 * z2, axis=1))

    left, right = protocol.left, protocol.right
    for section, first, second in (("resolutions", full, full),
                                   ("cross_resolution", full, low)):
        key = "112" if section == "resolutions" else "14"
        scores = rule(first[left], second[right])
        assert results[section][key]["accuracy"] == pytest.approx(
            kfold_accuracy(scores, protocol.labels, protocol.folds).mean)
    # 112 px pairs were compared in the sharp branch's space, cross pairs in the student's,
    # which differs from the gated embeddings' cosine across the two branches
    assert all(laplacian_score(face).laplacian >= gate.threshold for face in full[left])
    assert all(laplacian_score(face).laplacian < gate.threshold for face in low[right])
    served = OnnxEmbedder(source)
    across = np.sum(served.embed_pixels(full[left]) * served.embed_pixels(low[right]), axis=1)
    assert not np.allclose(across, rule(full[left], low[right]), atol=1e-3)
    # flip averaging and one branch are refused: the vectors are three blocks
    for option, message in ((("--flip",), "--flip needs one unit vector per face"),
                            (("--branch", "blurred"), "is a pair-space model")):
        result = CliRunner().invoke(app, ["eval", "lfw", "--model", str(pair), "--data",
                                          str(lfw_dir), "--out", str(tmp_path / "x"),
                                          "--limit", "10", *option])
        assert result.exit_code == 2 and message in result.output, result.output


def test_parse_resolutions() -> None:
    assert parse_resolutions("112, 56,28") == (112, 56, 28)
    assert parse_resolutions("native,14,14") == (None, 14)
    with pytest.raises(ValueError, match="neither"):
        parse_resolutions("112,big")


def test_runner_degrades_probes_only_and_caches(
    pixel_model: Path, tmp_path: Path, identity_image, layouts
) -> None:
    folder = layouts.identity_folder(tmp_path / "people", identity_image)
    protocol = load_identity_folder(folder, 1)
    model = load_model(pixel_model)
    settings = EvalSettings(resolutions=(112, 28, 7, 28), progress=False)
    run = evaluate(model, protocol, FaceLoader("aligned"), settings)
    # gallery embedded once at full quality, probes once per effective resolution
    n_gallery, n_probes = len(protocol.gallery), len(protocol.probes)
    assert run.results["images_embedded"] == n_gallery + 3 * n_probes
    assert run.results["settings"]["resolutions"] == ["112", "28", "7", "28"]


def test_flip_averages_each_face_with_its_mirror_image(pixel_model: Path) -> None:
    model = load_model(pixel_model)
    rng = np.random.default_rng(5)
    faces = rng.integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    faces[5] = 0  # a face that was not found
    failed = np.zeros(6, bool)
    failed[5] = True
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    both = np.concatenate([faces, mirrored])
    settings = EvalSettings(resolutions=(112, 14), progress=False, flip=True)
    store = EmbeddingStore(model, both, settings, failed=np.concatenate([failed, failed]))
    plain = EmbeddingStore(model, faces, EvalSettings(progress=False))
    for side in (112, 14):
        flipped = store.get(side, np.arange(12))
        # a face and its mirror image get the same embedding; unit length; no face: zero
        np.testing.assert_allclose(flipped[:6], flipped[6:], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(flipped[:5], axis=1), 1.0, atol=1e-6)
        assert not flipped[5].any() and not flipped[11].any()
        own, mirror = plain.get(side, np.arange(5)), EmbeddingStore(
            model, mirrored, EvalSettings(progress=False)).get(side, np.arange(5))
        expected = (own + mirror) / np.linalg.norm(own + mirror, axis=1, keepdims=True)
        np.testing.assert_allclose(flipped[:5], expected, atol=1e-6)
    assert store.embedded == 24  # each face once per side; the mirror images beside them


def test_eval_camera_option_is_recorded(pixel_model: Path, lfw_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for name, extra in (("plain", ()), ("camera", ("--camera",))):
        _invoke("lfw", "--model", str(pixel_model), "--data", str(lfw_dir), "--out",
                str(tmp_path / name), "--limit", "20", "--resolutions", "14", *extra)
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert runs["plain"]["settings"]["camera"] is None
    assert runs["camera"]["settings"]["camera"] == CameraEffects().model_dump(mode="json")
    assert "with camera effects" in (tmp_path / "camera" / "table.md").read_text()
    assert runs["camera"]["resolutions"]["14"] != runs["plain"]["resolutions"]["14"]


def test_camera_effects_in_evaluation_are_repeatable_per_image(pixel_model: Path) -> None:
    model = load_model(pixel_model)
    faces = np.random.default_rng(6).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    settings = EvalSettings(resolutions=(112, 14), progress=False, camera=CameraEffects())
    store = EmbeddingStore(model, faces, settings)
    every = np.arange(4)
    camera = store.pixels(14, every)
    np.testing.assert_array_equal(camera, store.pixels(14, every))
    np.testing.assert_array_equal(camera[2:], store.pixels(14, every[2:]))  # per image
    expected = [degrade(f, 14, camera=CameraEffects(), rng=np.random.default_rng((i, 14)))
                for i, f in enumerate(faces)]
    np.testing.assert_array_equal(camera, np.stack(expected))
    np.testing.assert_array_equal(store.pixels(112, every), faces)  # sharp: untouched
    # detector boxes (--faces box): the effects act on the box shrunk to r px
    boxes = [f[10:100, 15:95] for f in faces]
    with_box = EmbeddingStore(model, faces, settings, boxes=boxes)
    plain_box = EmbeddingStore(model, faces, EvalSettings(progress=False), boxes=boxes)
    np.testing.assert_array_equal(with_box.pixels(14, every), with_box.pixels(14, every))
    assert not np.array_equal(with_box.pixels(14, every), plain_box.pixels(14, every))
    np.testing.assert_array_equal(with_box.pixels(112, every), plain_box.pixels(112, every))


def test_torch_module_model_matches_numpy_normalisation() -> None:
    torch = pytest.importorskip("torch")

    class Thumbnail(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 14).flatten(1)

    module = Thumbnail().train()
    model = TorchModuleModel(module, name="thumb")
    pixels = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    embeddings = model.embed_pixels(pixels)
    expected = ((pixels.astype(np.float32) - 127.5) / 127.5).reshape(3, 8, 14, 8, 14, 3)
    expected = expected.mean(axis=(2, 4)).transpose(0, 3, 1, 2).reshape(3, -1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    assert model.describe()["name"] == "thumb"
    assert module.training  # the caller's mode is restored


def test_checkpoint_model_evaluates_like_its_backbone(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    backbones = pytest.importorskip("models.backbones")
    torch.manual_seed(0)
    backbone = backbones.create_backbone("ir-tiny", embedding_size=32).eval()
    path = tmp_path / "step_10.pt"
    torch.save({"backbone_name": "ir-tiny", "backbone_kwargs": {"embedding_size": 32},
                "backbone_state": backbone.state_dict(), "head_name": "arcface", "step": 10},
               path)
    model = load_model(path)
    info = model.describe()
    assert info["format"] == "torch-checkpoint" and info["backbone"] == "ir-tiny"
    assert info["step"] == 10 and info["head"] == "arcface"
    pixels = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    got = model.embed_pixels(pixels)
    expected = TorchModuleModel(backbone).embed_pixels(pixels)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_interleaved_view1_folds_are_used_for_lfw_view1(lfw_dir: Path) -> None:
    protocol = load_lfw(lfw_dir, 1)
    np.testing.assert_array_equal(protocol.folds, interleaved_folds(protocol.labels, 10))


@pytest.mark.parametrize("name", ["lfw", "survface", "scface", "tinyface", "folder"])
def test_every_protocol_is_a_command_with_the_shared_options(name: str) -> None:
    from lrfr.commands.eval import PROTOCOLS

    assert name in PROTOCOLS
    result = CliRunner().invoke(app, ["eval", name, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--model", "--data", "--out", "--resolutions", "--faces", "--landmarks",
                   "--limit", "--down", "--up", "--batch-size", "--workers", "--device",
                   "--threads", "--progress"):
        assert option in result.output, (name, option)


def test_protocol_names_are_unique() -> None:
    from lrfr.commands.eval import PROTOCOLS, EvalProtocol, register_protocol

    with pytest.raises(ValueError, match="already registered"):
        register_protocol(EvalProtocol(name="lfw", help="again", load=PROTOCOLS["lfw"].load))


def test_identification_of_a_pair_space_model_searches_with_query_vectors(
    lfw_dir: Path, tmp_path: Path
) -> None:
    from models.backbones.gated import QualityGated
    from models.comparison import queries
    from models.export import export_onnx
    from models.quantize import write_pair_space
    from tests.models.conftest import TINY_GATE, make_tiny_backbone
    from training.eval.datasets import load_lfw_identification

    gate = TINY_GATE.model_copy(update={"threshold": 4.5795})  # LFW at 112 px is above it
    source, pair = tmp_path / "gated.onnx", tmp_path / "pair.onnx"
    export_onnx(QualityGated(make_tiny_backbone(seed=0), make_tiny_backbone(seed=1),
                             gate=gate.threshold), source, name="g", version="0",
                backbone_name="ir-tiny", gate=gate)
    protocol = load_lfw(lfw_dir, 1).subset(10)
    ident = load_lfw_identification(lfw_dir).subset(12)
    crops = {}
    for path in ident.images:
        with Image.open(path) as image:
            crops[path] = crop_lfw_deepfunneled(image)
    write_pair_space(source, pair, np.stack(list(crops.values())))
    run = evaluate(load_model(pair), protocol, FaceLoader("lfw"),
                   EvalSettings(resolutions=(112, 14), cross_resolution=True, progress=False),
                   identification=ident)
    rank1 = run.results["identification"]["cross_resolution"]["14"]["rank1"]
    sharp_rank1 = run.results["identification"]["resolutions"]["112"]["rank1"]
    # by hand: the sharp gallery's stored vectors against each 14 px probe's query vector
    embedder = OnnxEmbedder(pair)
    gallery = embedder.embed_pixels(np.stack([crops[ident.images[i]] for i in ident.gallery]))
    probes = embedder.embed_pixels(
        np.stack([degrade(crops[ident.images[i]], 14) for i in ident.probes]))
    best = (queries(probes, "pair-space") @ gallery.T).argmax(axis=1)
    expected = np.mean(np.asarray(ident.gallery_labels)[best] == np.asarray(ident.probe_labels))
    assert rank1 == pytest.approx(expected)
    # sharp probes: dlib's cosine alone (a plain product would add the students' to it)
    sharp_probes = embedder.embed_pixels(np.stack([crops[ident.images[i]] for i in ident.probes]))
    labels = np.asarray(ident.gallery_labels)
    by_query = (queries(sharp_probes, "pair-space") @ gallery.T).argmax(axis=1)
    by_plain = (sharp_probes @ gallery.T).argmax(axis=1)
    assert sharp_rank1 == pytest.approx(np.mean(labels[by_query] == ident.probe_labels))
    assert not np.array_equal(by_query, by_plain)
    # the gated model as it served before ranks the gallery's g against the probes' z
    served = OnnxEmbedder(source)
    across = (served.embed_pixels(np.stack([degrade(crops[ident.images[i]], 14)
                                            for i in ident.probes]))
              @ served.embed_pixels(np.stack([crops[ident.images[i]]
                                              for i in ident.gallery])).T).argmax(axis=1)
    assert not np.array_equal(best, across)

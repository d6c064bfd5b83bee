"""POST /datasets over HTTP: every hostile archive is answered with its 4xx, the server keeps
serving and nothing is left on disk (no staging folder, no partial data set); a good archive
is listed with per-class counts, deleted unless a job uses it."""

from __future__ import annotations

import io
import random
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.service.app import create_app
from tests.samples import SAMPLE_DIR
from tests.server.api_helpers import make_settings, wait_job

ZIP = {"Content-Type": "application/zip"}


def png(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


def zip_of(files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return out.getvalue()


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tf:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def good_files(prefix: str = "") -> dict[str, bytes]:
    """Two classes, train and test: what a good upload holds."""
    return (
        {f"{prefix}train/red/r{i}.png": png((200 + i, 0, 0)) for i in range(3)}
        | {f"{prefix}train/blue/b{i}.png": png((0, 0, 200 + i)) for i in range(3)}
        | {
            f"{prefix}test/red/r9.png": png((250, 0, 0)),
            f"{prefix}test/blue/b9.png": png((0, 0, 250)),
        }
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    settings = make_settings(
        tmp_path,
        "slow",
        dataset_max_files=40,
        dataset_max_file_bytes=64_000,
        dataset_max_total_bytes=200_000,
        dataset_max_upload_bytes=300_000,
    )
    (tmp_path / "data").mkdir()
    with TestClient(create_app(settings)) as client:
        yield client, settings.uploads_dir


def post(client: TestClient, body: bytes, name: str = "mine", **params: Any) -> Any:
    return client.post("/datasets", params={"name": name, **params}, content=body, headers=ZIP)


def assert_refused(
    server: tuple[TestClient, Path], body: bytes, status: int, words: str, name: str = "mine"
) -> dict:
    client, uploads = server
    resp = post(client, body, name)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert words in error["message"], error
    assert client.get("/healthz").status_code == 200
    assert name not in {d["name"] for d in client.get("/datasets").json()}
    assert list(uploads.iterdir()) == []  # no staging folder, no partial data set
    return error


def _zip_link() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in good_files().items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo("train/red/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return out.getvalue()


HOSTILE: dict[str, tuple[bytes, int, str]] = {
    "dotdot": (zip_of({**good_files(), "train/red/../../../evil.png": png()}), 422, "escapes"),
    "absolute": (tar_of([(tar_member("/tmp/evil.png"), png())]), 422, "absolute path"),
    "drive letter": (zip_of({**good_files(), "C:/evil/x.png": png()}), 422, "drive letter"),
    "backslash": (zip_of({**good_files(), "..\\..\\evil.png": png()}), 422, "backslash"),
    "zip symlink": (_zip_link(), 422, "symbolic link"),
    "tar symlink": (
        tar_of([(tar_member("train/red/x.png", tarfile.SYMTYPE, "/etc/passwd"), None)]),
        422,
        "symbolic link",
    ),
    "tar hardlink": (
        tar_of([(tar_member("train/red/x.png", tarfile.LNKTYPE, "/etc/passwd"), None)]),
        422,
        "hard link",
    ),
    "device file": (
        tar_of([(tar_member("train/red/x.png", tarfile.CHRTYPE), None)]),
        422,
        "device file",
    ),
    "fifo": (tar_of([(tar_member("train/red/x.png", tarfile.FIFOTYPE), None)]), 422, "FIFO"),
    "file over the limit": (
        zip_of({**good_files(), "train/red/big.png": bytes(70_000)}, zipfile.ZIP_DEFLATED),
        413,
        "SIQ_DATASET_MAX_FILE_BYTES",
    ),
    "total over the limit": (
        zip_of({f"train/red/{i}.png": random.Random(i).randbytes(60_000) for i in range(4)}),
        413,
        "SIQ_DATASET_MAX_TOTAL_BYTES",
    ),
    "ratio over the limit": (
        zip_of({"train/red/zeros.png": bytes(60_000)}, zipfile.ZIP_DEFLATED),
        413,
        "SIQ_DATASET_MAX_RATIO",
    ),
    "gzip bomb in a tar": (
        tar_of([(tar_member("train/red/zeros.png"), bytes(60_000))], "w:gz"),
        413,
        "SIQ_DATASET_MAX_RATIO",
    ),
    "too many files": (
        zip_of({f"train/red/{i}.png": b"" for i in range(41)}),
        413,
        "SIQ_DATASET_MAX_FILES",
    ),
    "not an archive": (b"just some bytes, no archive at all", 415, "not a zip, tar"),
    "over the upload limit": (bytes(300_001), 413, "SIQ_DATASET_MAX_UPLOAD_BYTES"),
    "empty body": (b"", 422, "empty"),
    "non-image files": (
        zip_of({**good_files(), "train/red/notes.txt": b"hi", "test/blue/a.csv": b"1"}),
        422,
        "train/red/notes.txt: not an image file",
    ),
    "undecodable image": (
        zip_of({**good_files(), "train/blue/broken.png": b"\x89PNG\r\n\x1a\n broken"}),
        422,
        "train/blue/broken.png: does not decode",
    ),
    "one class": (zip_of({f"red/{i}.png": png() for i in range(4)}), 422, "at least 2 classes"),
    "class without test images": (
        zip_of({k: v for k, v in good_files().items() if k != "test/blue/b9.png"}),
        422,
        "classes with no test images: blue",
    ),
    "class of one image": (
        zip_of({"red/1.png": png(), "red/2.png": png(), "blue/1.png": png()}),
        422,
        "classes with no test images: blue",
    ),
    "file outside the layout": (
        zip_of({**good_files(), "stray.png": png()}),
        422,
        "outside the layout",
    ),
    "a file twice": (
        tar_of([(tar_member("train/red/x.png"), png()), (tar_member("train/red/x.png"), png())]),
        422,
        "appears twice",
    ),
    "corrupt zip": (b"PK\x03\x04" + bytes(100), 422, "corrupt zip"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(
    server: tuple[TestClient, Path], case: str
) -> None:
    body, status, words = HOSTILE[case]
    assert_refused(server, body, status, words)


def test_unusable_files_are_all_listed(server: tuple[TestClient, Path]) -> None:
    body, status, _ = HOSTILE["non-image files"]
    message = assert_refused(server, body, status, "2 file(s)")["message"]
    assert "test/blue/a.csv: not an image file" in message


@pytest.mark.parametrize("name", ["../up", "a b", ".hidden", "x" * 65, "é"])
def test_bad_name_is_422(server: tuple[TestClient, Path], name: str) -> None:
    error = assert_refused(server, zip_of(good_files()), 422, "not allowed", name)
    assert error["field"] == "name"


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_builtin_name_is_409(server: tuple[TestClient, Path], name: str) -> None:
    client, uploads = server
    resp = post(client, zip_of(good_files()), name)
    assert resp.status_code == 409, resp.text
    assert "exists already" in resp.json()["error"]["message"]
    assert list(uploads.iterdir()) == []


def test_data_directory_name_is_409(server: tuple[TestClient, Path], tmp_path: Path) -> None:
    (tmp_path / "data" / "office").mkdir()
    assert_refused(server, zip_of(good_files()), 409, "exists already", "office")


def test_existing_name_is_409_and_the_first_stays(server: tuple[TestClient, Path]) -> None:
    client, uploads = server
    assert post(client, zip_of(good_files())).status_code == 201
    resp = post(client, zip_of(good_files()))
    assert resp.status_code == 409, resp.text
    assert sorted(p.name for p in uploads.iterdir()) == ["mine"]


def test_writes_need_the_token(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, api_token="tok"))) as client:
        assert post(client, zip_of(good_files())).status_code == 401
        assert client.delete("/datasets/x").status_code == 401
        headers = {**ZIP, "Authorization": "Bearer tok"}
        resp = client.post("/datasets", params={"name": "x"}, content=zip_of(good_files()),
                           headers=headers)  # fmt: skip
        assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(
    "form", ["zip", "tar", "tar.gz", "top folder", "class folders", "mac junk"]
)
def test_good_archives_are_listed_with_counts(server: tuple[TestClient, Path], form: str) -> None:
    client, uploads = server
    files = good_files("pets/" if form == "top folder" else "")
    if form == "mac junk":
        files |= {"__MACOSX/train/red/._r0.png": b"junk", "train/.DS_Store": b"junk"}
    if form == "class folders":  # 4 + 4 images, split 1 in 4 by hash
        files = {f"{c}/{i}.png": png() for c in ("red", "blue") for i in range(4)}
    if form in ("tar", "tar.gz"):
        members = [(tar_member(k), v) for k, v in files.items()]
        body = tar_of(members, "w:gz" if form == "tar.gz" else "w")
    else:
        body = zip_of(files, zipfile.ZIP_DEFLATED)
    resp = post(client, body, test_fraction=0.25)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"] == "/datasets/mine"
    info = client.get("/datasets/mine").json()
    assert info == resp.json()
    assert info["classes"] == ["blue", "red"] and info["uploaded"] is True
    want = {"train": 3, "test": 1} if form == "class folders" else {"train": 3, "test": 1}
    assert info["class_counts"] == {"blue": want, "red": want}
    assert (info["train_count"], info["test_count"]) == (6, 2)
    assert sorted(p.name for p in uploads.iterdir()) == ["mine"]
    assert sorted(p.name for p in (uploads / "mine").iterdir()) == ["test", "train"]


def test_hash_split_does_not_depend_on_the_order(server: tuple[TestClient, Path]) -> None:
    client, _ = server
    files = {f"{c}/{i}.png": png() for c in ("red", "blue") for i in range(8)}
    backwards = dict(reversed(list(files.items())))
    assert post(client, zip_of(files), "a").status_code == 201
    assert post(client, zip_of(backwards), "b").status_code == 201
    a, b = (client.get(f"/datasets/{n}").json() for n in "ab")
    assert (
        a["class_counts"]
        == b["class_counts"]
        == {c: {"train": 6, "test": 2} for c in ("blue", "red")}
    )  # the default test share, 0.2 of 8 rounded
    root = server[1]
    assert sorted(p.name for p in (root / "a/test/red").iterdir()) == sorted(
        p.name for p in (root / "b/test/red").iterdir()
    )


def test_delete_refused_while_a_job_uses_it(server: tuple[TestClient, Path]) -> None:
    client, uploads = server
    assert post(client, zip_of(good_files())).status_code == 201
    job = {"dataset": "mine", "weight_bits": 4, "activation_bits": 4}
    resp = client.post("/quantize-jobs", json=job)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    refused = client.delete("/datasets/mine")
    assert refused.status_code == 409, refused.text
    assert "used by a queued or running job" in refused.json()["error"]["message"]
    assert (uploads / "mine" / "train").is_dir()
    assert client.post(f"/quantize-jobs/{job_id}/cancel").status_code in (200, 202)
    wait_job(client, job_id)
    assert client.delete("/datasets/mine").status_code == 204
    assert list(uploads.iterdir()) == []
    assert "mine" not in {d["name"] for d in client.get("/datasets").json()}
    assert client.post("/quantize-jobs", json=job).status_code == 422  # unknown now


def test_delete_unknown_or_builtin_is_404(server: tuple[TestClient, Path]) -> None:
    client, _ = server
    assert client.delete("/datasets/nothing").status_code == 404
    resp = client.delete("/datasets/digits")
    assert resp.status_code == 404
    assert "only uploaded data sets" in resp.json()["error"]["message"]


def test_leftovers_of_a_killed_upload_are_removed_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    left = settings.uploads_dir / ".tmp-abc" / "raw"
    left.mkdir(parents=True)
    (left / "x.png").write_bytes(png())
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert list(settings.uploads_dir.iterdir()) == []


def office10_zip(tmp_path: Path) -> Path:
    path = tmp_path / "office10.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted((SAMPLE_DIR / "office10").rglob("*")):
            zf.write(file, Path("office10") / file.relative_to(SAMPLE_DIR / "office10"))
    return path


@pytest.mark.slow
def test_uploaded_office10_trains_a_bundle_then_is_deleted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "server.training.job:run_job")
    archive = office10_zip(tmp_path)
    with TestClient(create_app(settings)) as client:
        with archive.open("rb") as body:
            resp = client.post("/datasets", params={"name": "office"}, content=body, headers=ZIP)
        assert resp.status_code == 201, resp.text
        listed = {d["name"]: d for d in client.get("/datasets").json()}["office"]
        assert listed["train_count"] + listed["test_count"] == 70
        assert len(listed["classes"]) == len(listed["class_counts"]) == 10
        assert all(c["train"] > 0 and c["test"] > 0 for c in listed["class_counts"].values())
        job = {
            "dataset": "office",
            "weight_bits": 4,
            "activation_bits": 4,
            "epochs": 0.5,
            "retrain_epochs": 0.25,
            "max_iterations": 1,
            "kmeans": "lloyd",
            "train_limit": 16,
            "test_limit": 8,
        }
        resp = client.post("/quantize-jobs", json=job)
        assert resp.status_code == 202, resp.text
        done = wait_job(client, resp.json()["id"], timeout=240)
        assert done["status"] == "succeeded", done
        bundle = client.get(f"/bundles/{done['result']['bundle_id']}")
        assert bundle.status_code == 200 and len(bundle.content) > 0
        assert client.delete("/datasets/office").status_code == 204
        assert list(settings.uploads_dir.iterdir()) == []


def test_an_archive_may_exceed_the_server_wide_body_bound(tmp_path: Path) -> None:
    """SIQ_MAX_BODY_BYTES bounds JSON bodies; an archive has its own bound."""
    settings = make_settings(tmp_path, max_body_bytes=1024)
    body = zip_of(good_files())
    assert len(body) > 1024
    with TestClient(create_app(settings)) as client:
        assert post(client, body).status_code == 201
        job = {"dataset": "mine", "weight_bits": 4, "activation_bits": 4, "x": "y" * 2000}
        assert client.post("/quantize-jobs", json=job).status_code == 413

"""Reader study: creating a study, what the server lets readers see, and the analysis.

The stores, studies and live servers come from helpers.py (shared with test_reader_study_browser.py and
test_reader_study_load.py).
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import struct

import numpy as np
import pytest
import uvicorn
from PIL import Image
from scipy import stats

from helpers import STUDY_LABELS, add_reader, answer_key, make_store, make_study, refused_by_cli, run_cli, thread_server
from synthmed.reader_study import db
from synthmed.reader_study.analysis import accuracy, reader_counts, summarize
from synthmed.reader_study.create import allocate, create_study
from synthmed.reader_study.png import encode_png

LINK = re.compile(r"http://\S+/r/[A-Za-z0-9_-]+/")


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


# ---- encoding and drawing ----------------------------------------------------------------------


def test_png_has_one_length_per_size_and_no_metadata():
    rng = np.random.default_rng(0)
    flat, noise = np.full((1, 64, 64), 128, np.uint8), rng.integers(0, 256, (1, 64, 64), dtype=np.uint8)
    encoded = [encode_png(image) for image in (flat, noise)]
    assert len(encoded[0]) == len(encoded[1])  # content does not change the size
    for data, image in zip(encoded, (flat, noise)):
        assert [kind for kind, _ in png_chunks(data)] == [b"IHDR", b"IDAT", b"IEND"]
        decoded = Image.open(io.BytesIO(data))
        assert decoded.mode == "L" and decoded.size == (64, 64) and not decoded.info
        np.testing.assert_array_equal(np.asarray(decoded), image[0])
    rgb = Image.open(io.BytesIO(encode_png(rng.integers(0, 256, (3, 300, 300), dtype=np.uint8))))
    assert rgb.mode == "RGB" and rgb.size == (300, 300)  # > 64 KiB: several stored deflate blocks


def test_allocate_follows_the_weights_and_passes_on_what_a_combination_lacks():
    assert allocate(10, {"01": 1, "10": 1}, {"01": 9, "10": 9}) == {"01": 5, "10": 5}
    assert allocate(10, {"01": 3, "10": 1}, {"01": 9, "10": 9}) == {"01": 8, "10": 2}  # 7.5 / 2.5, deterministic
    assert allocate(10, {"01": 1, "10": 1}, {"01": 2, "10": 20}) == {"01": 2, "10": 8}


def test_create_draws_both_classes_alike_and_keeps_the_key_private(tmp_path):
    real, synthetic = make_store(tmp_path / "real", 12, seed=1), make_store(tmp_path / "synthetic", 10, seed=2)
    path, admin_token = create_study(real, synthetic, tmp_path / "study", resolution=32, n_real=6, n_synthetic=6,
                                     seed=3, log=lambda m: None)
    assert path.stat().st_mode & 0o077 == 0  # the answer key is readable by its owner only
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        images = dict(conn.execute("SELECT id, png FROM images"))
        key = conn.execute("SELECT image_id, truth, store_index, combination FROM answer_key").fetchall()
        meta = {name: json.loads(value) for name, value in conn.execute("SELECT name, value FROM meta")}
    assert len(images) == 12 and {len(png) for png in images.values()} == {meta["png_bytes"]}
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", image_id) for image_id in images)
    assert sorted(truth for _, truth, _, _ in key) == ["real"] * 6 + ["synthetic"] * 6
    for truth in ("real", "synthetic"):  # stratified alike: 3 'No Finding' and 3 'Tumor' on each side
        assert sorted(c for _, t, _, c in key if t == truth) == ["01"] * 3 + ["10"] * 3
    assert meta["admin_token_hash"] == db.hash_token(admin_token) and admin_token not in str(meta)

    again, _ = create_study(real, synthetic, tmp_path / "again", resolution=32, n_real=6, n_synthetic=6, seed=3,
                            log=lambda m: None)
    with sqlite3.connect(again) as conn:
        redraw = conn.execute("SELECT truth, store_index FROM answer_key").fetchall()
        new_ids = {row[0] for row in conn.execute("SELECT id FROM images")}
    assert sorted(redraw) == sorted((t, i) for _, t, i, _ in key)  # the draw is seeded ...
    assert not new_ids & set(images)  # ... the ids are not


@pytest.mark.parametrize("case, message", [
    ("missing store", "store not found"),
    ("resolution", "store has resolutions [32], not 64"),
    ("too few", "not enough images: the test fold has 8, --n-real asks for 50"),
    ("labels", "the synthetic set has labels"),
    ("exists", "already holds a reader study"),
])
def test_create_refuses_bad_inputs_with_a_clear_message(tmp_path, capsys, case, message):
    real = make_store(tmp_path / "real", 8, seed=1)
    names = ["Normal", "Tumor"] if case == "labels" else STUDY_LABELS
    synthetic = make_store(tmp_path / "synthetic", 8, seed=2, names=names)
    args = {"--real": str(real), "--synthetic": str(synthetic), "--resolution": "32", "--out": str(tmp_path / "s"),
            "--n-real": "4", "--n-synthetic": "4"}
    if case == "missing store":
        args["--real"] = str(tmp_path / "nowhere")
    elif case == "resolution":
        args["--resolution"] = "64"
    elif case == "too few":
        args["--n-real"] = "50"
    elif case == "exists":
        assert run_cli(["reader-study", "create", *[v for kv in args.items() for v in kv]]) == 0
    code = run_cli(["reader-study", "create", *[v for kv in args.items() for v in kv]])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2 and message in error, error


# ---- the server: nothing but pixels may differ, and tokens keep readers apart ------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    study, admin_token = make_study(tmp_path_factory.mktemp("served"), 6)
    tokens = [add_reader(study, name) for name in ("R1", "R2", "R3")]
    with thread_server(study) as base:
        yield study, base, admin_token, tokens


def test_image_responses_differ_only_in_pixels(served):
    import httpx

    study, base, _, tokens = served
    key = answer_key(study)
    seen = {"real": [], "synthetic": []}
    with httpx.Client(base_url=f"{base}/r/{tokens[0]}/") as client:
        for image_id, truth in key.items():
            response = client.get(f"images/{image_id}.png")
            assert response.status_code == 200
            headers = dict(response.headers)
            image = Image.open(io.BytesIO(response.content))
            chunks = [(kind, data) for kind, data in png_chunks(response.content) if kind != b"IDAT"]
            seen[truth].append((headers, image.mode, image.size, image.info, chunks, image.format))
    assert len(seen["real"]) == len(seen["synthetic"]) == 6
    everything = seen["real"] + seen["synthetic"]
    assert all(item == everything[0] for item in everything), "a response differs by more than its pixels"
    headers = everything[0][0]
    assert headers["content-type"] == "image/png" and headers["cache-control"] == "no-store"
    assert not {"date", "server", "etag", "last-modified"} & set(headers)
    assert everything[0][1:4] == ("L", (32, 32), {})


def test_reader_pages_differ_only_in_the_opaque_id(served):
    import httpx

    study, base, _, _ = served
    key = answer_key(study)
    pages: dict[str, set[str]] = {"real": set(), "synthetic": set()}
    first_images = set()
    for n in range(12):  # first pages of new readers: same position, real or synthetic by their shuffle
        token = add_reader(study, f"page reader {n}")
        html = httpx.get(f"{base}/r/{token}/").text
        image_id = re.search(r'src="images/([A-Za-z0-9_-]{22})\.png"', html).group(1)
        assert token not in html and html.count(image_id) == 2
        first_images.add(image_id)
        pages[key[image_id]].add(html.replace(image_id, "ID"))
    assert len(first_images) > 1  # each reader has their own order
    assert len(pages["real"]) == len(pages["synthetic"]) == 1 and pages["real"] == pages["synthetic"]


def test_tokens_keep_readers_apart_and_bad_requests_get_json_errors(served):
    import httpx

    study, base, admin_token, (mine, theirs, _) = served
    image_id = next(iter(answer_key(study)))
    ok = httpx.post(f"{base}/r/{theirs}/answers", json={"image": image_id, "label": "real"})
    assert ok.status_code == 200 and ok.json() == {"status": "recorded", "answered": 1, "total": 12}
    assert set(ok.json()) == {"status", "answered", "total"}  # no hint of the truth
    again = httpx.post(f"{base}/r/{theirs}/answers", json={"image": image_id, "label": "real"})
    assert again.json()["status"] == "duplicate"

    # my own answer to the same image is mine; theirs stays as it was and cannot be read
    assert httpx.post(f"{base}/r/{mine}/answers", json={"image": image_id, "label": "synthetic"}).status_code == 200
    with sqlite3.connect(study / db.DB_NAME) as conn:
        rows = conn.execute("SELECT r.name, x.label FROM answers x JOIN readers r ON r.id = x.reader_id "
                            "WHERE x.image_id = ?", (image_id,)).fetchall()
    assert sorted(rows) == [("R1", "synthetic"), ("R2", "real")]
    for path in (f"/r/{mine}/answers", f"/admin/{mine}/", f"/admin/{mine}/progress", "/admin/x/progress", "/key",
                 "/docs", "/openapi.json", f"/r/{mine}/images/{'A' * 22}.png"):
        response = httpx.get(base + path)
        assert response.status_code in (404, 405) and "detail" in response.json(), path
    assert httpx.get(f"{base}/admin/{admin_token}/progress").json()["readers"][1]["answered"] == 1

    bad = {
        "unknown token": (f"/r/{'x' * 32}/answers", {"image": image_id, "label": "real"}, 404, "unknown reader link"),
        "bad label": (f"/r/{mine}/answers", {"image": image_id, "label": "fake"}, 422, "label"),
        "no image": (f"/r/{mine}/answers", {"label": "real"}, 422, "image"),
        "extra field": (f"/r/{mine}/answers", {"image": image_id, "label": "real", "truth": 1}, 422, "truth"),
        "unknown image": (f"/r/{mine}/answers", {"image": "A" * 22, "label": "real"}, 404, "unknown image id"),
        "changed answer": (f"/r/{mine}/answers", {"image": image_id, "label": "real"}, 409, "answers are final"),
    }
    for case, (path, body, status, text) in bad.items():
        response = httpx.post(base + path, json=body)
        assert response.status_code == status and text in response.json()["detail"], (case, response.text)
    not_json = httpx.post(f"{base}/r/{mine}/answers", content=b"{real", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and "malformed request" in not_json.json()["detail"]
    assert httpx.get(f"{base}/r/{'y' * 32}/").status_code == 404


def test_admin_creates_readers_and_sees_progress_only(served):
    import httpx

    _, base, admin_token, _ = served
    created = httpx.post(f"{base}/admin/{admin_token}/readers", json={"name": "R4"})
    assert created.status_code == 201 and LINK.fullmatch(created.json()["link"])
    assert httpx.get(created.json()["link"]).status_code == 200
    assert httpx.post(f"{base}/admin/{admin_token}/readers", json={"name": "R4"}).status_code == 409
    page = httpx.get(f"{base}/admin/{admin_token}/").text
    assert "R4" in page and "synthetic" not in page.lower()


# ---- analysis -----------------------------------------------------------------------------------


def test_each_reader_resumes_at_their_own_next_image(tmp_path):
    """``current_image`` walks one reader's own order, past that reader's own answers only: another reader
    who is ahead, on the same images in another order, never moves it."""
    study, _ = make_study(tmp_path, 4)
    tokens = [add_reader(study, name) for name in ("R1", "R2")]
    conn = db.connect(db.study_database(study))
    try:
        first, second = (db.reader_for_token(conn, token).id for token in tokens)
        order = {reader: [row[0] for row in conn.execute(
            "SELECT image_id FROM assignments WHERE reader_id = ? ORDER BY position", (reader,))]
            for reader in (first, second)}
        assert sorted(order[first]) == sorted(order[second]) and order[first] != order[second]
        for image in order[first][:5]:  # R1 runs ahead
            assert db.current_image(conn, first) == image
            assert db.record_answer(conn, first, image, "real") == "recorded"
        for image in order[second]:
            assert db.current_image(conn, second) == image
            assert db.record_answer(conn, second, image, "synthetic") == "recorded"
            assert db.current_image(conn, first) == order[first][5]
        assert db.current_image(conn, second) is None
    finally:
        conn.close()


def test_counts_accuracy_and_wilcoxon_on_a_hand_made_table():
    table = ([("A", "real", "real")] * 3 + [("A", "real", "synthetic")] + [("A", "synthetic", "real")] * 2
             + [("A", "synthetic", "synthetic")] * 2
             + [("B", "real", "real")] * 4 + [("B", "synthetic", "synthetic")] * 3 + [("B", "synthetic", "real")]
             + [("C", "real", "synthetic")] * 3 + [("C", "real", "real")] + [("C", "synthetic", "real")] * 4)
    counts = reader_counts(table)
    assert counts == {"A": {"TR": 3, "FR": 2, "TS": 2, "FS": 1}, "B": {"TR": 4, "FR": 1, "TS": 3, "FS": 0},
                      "C": {"TR": 1, "FR": 4, "TS": 0, "FS": 3}}
    accuracies = [accuracy(c) for c in counts.values()]
    assert accuracies == [5 / 8, 7 / 8, 1 / 8]
    summary = summarize(counts)
    assert summary["TR"]["mean"] == pytest.approx(8 / 3)
    assert summary["TR"]["std"] == pytest.approx(np.std([3, 4, 1], ddof=0)) and summary["TR"]["ddof"] == 0
    assert summary["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    expected = stats.wilcoxon(np.array(accuracies) - 0.5, alternative="greater").pvalue
    assert summary["wilcoxon"]["readers_beat_chance"]["p_value"] == pytest.approx(expected)
    less = stats.wilcoxon(np.array(accuracies) - 0.5, alternative="less").pvalue
    assert summary["wilcoxon"]["paper_variant"]["p_value"] == pytest.approx(less)


def test_analyze_cli_writes_the_tables_and_the_figure(tmp_path, capsys):
    study, _ = make_study(tmp_path, 4)
    for name in ("R1", "R2", "R3"):
        assert run_cli(["reader-study", "add-reader", str(study), name]) == 0
    assert len(LINK.findall(capsys.readouterr().out)) == 3
    key = answer_key(study)
    conn = db.connect(study / db.DB_NAME)
    for reader_id, wrong, answered in ((1, 0, 8), (2, 3, 8), (3, 4, 6)):  # R3 stops after 6 of 8: not counted
        for n, (image_id, truth) in enumerate(sorted(key.items())[:answered]):
            label = truth if n >= wrong else ("real" if truth == "synthetic" else "synthetic")
            assert db.record_answer(conn, reader_id, image_id, label) == "recorded"
    conn.close()

    assert run_cli(["reader-study", "analyze", str(study), "--out", str(tmp_path / "report")]) == 0
    output = capsys.readouterr().out
    assert "accuracies: 1.00  0.62" in output and "Wilcoxon" in output
    assert f"accuracy {np.mean([1, 5 / 8]):.3f} ± {np.std([1, 5 / 8], ddof=0):.3f} (std, ddof 0)" in output
    result = json.loads((tmp_path / "report" / "reader_study.json").read_text())
    assert [r["accuracy"] for r in result["readers"]] == [1.0, 5 / 8, 2 / 6]
    assert result["summary"]["n_readers"] == 2 and result["readers"][2]["complete"] is False
    assert sum(result["readers"][0][c] for c in ("TR", "FR", "TS", "FS")) == 8
    assert Image.open(tmp_path / "report" / "reader_study.png").format == "PNG"
    # the results may be passed on: the stores are named by content hash, their paths stay in the database
    text = (tmp_path / "report" / "reader_study.json").read_text()
    assert str(tmp_path) not in text and set(result["study"]["real_store"]) == {"content_hash"}
    conn = db.connect(study / db.DB_NAME)
    assert db.read_meta(conn)["real_store"]["path"].startswith(str(tmp_path))
    conn.close()


# ---- bad input: exit status 2, one `error:` line naming what is wrong, nothing written ----------------


def refused(args: list[str], folder, *words: str) -> None:
    """``helpers.refused_by_cli``, and no link printed."""
    assert "http" not in refused_by_cli(args, folder, *words).stdout


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("small"), 2)[0]


@pytest.mark.parametrize("options, words", [
    (["--port", "-1"], ["--port -1: must be a port number from 1 to 65535"]),
    (["--port", "70000"], ["--port 70000: must be a port number from 1 to 65535"]),
    (["--host", "999.1.1.1"], ["--host 999.1.1.1: not a known address"]),
    (["--port", "{busy}"], ["--port {busy}: cannot listen there"]),
])
def test_serve_refuses_an_address_it_cannot_listen_on(small_study, capsys, options, words):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        fill = [w.replace("{busy}", port) for w in options], [w.replace("{busy}", port) for w in words]
        refused(["reader-study", "serve", str(small_study), *fill[0]], small_study.parent, *fill[1])


def test_localhost_is_served_on_ipv4_where_the_printed_links_point():
    """getaddrinfo may list ::1 first for localhost; uvicorn binds IPv4 there, and so must we."""
    import socket

    from synthmed.reader_study.app import listening_socket

    with listening_socket("localhost", _free_port()) as sock:
        assert sock.family == socket.AF_INET


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_study_with_a_write_ahead_log_is_checked_through_it(tmp_path):
    """While a server writes (or after it was killed mid-checkpoint), part of the study lies only in the -wal
    file beside the database: it is read through SQLite's log, not as the main file lies, so the study is whole
    and not called damaged. Here every table is still in the log only."""
    writer = db.connect(tmp_path / db.DB_NAME)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")  # nothing reaches the main file while the writer is open
    writer.executescript(db.SCHEMA)
    try:
        assert (tmp_path / f"{db.DB_NAME}-wal").exists()
        assert db.checked_database(tmp_path) == tmp_path / db.DB_NAME
    finally:
        writer.close()


@pytest.mark.parametrize("damage", ["truncated", "empty"])
@pytest.mark.parametrize("command", [["analyze"], ["add-reader", "{study}", "R1"], ["serve"]])
def test_a_damaged_study_database_is_refused_by_name(tmp_path, capsys, damage, command):
    study, _ = make_study(tmp_path, 2)
    path = study / db.DB_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    args = ["reader-study", command[0], str(study), *command[2:]]
    refused(args, tmp_path, f"{path}: is damaged")


@pytest.mark.parametrize("command, damage, problem", [
    ("analyze", "DELETE FROM meta WHERE name = 'resolution'", "meta 'resolution' missing"),
    ("analyze", "UPDATE answers SET label = 'maybe'", "answers label 'maybe' is not one of ('real', 'synthetic')"),
    ("serve", "UPDATE meta SET value = '[oops' WHERE name = 'label_names'", "meta 'label_names' is not JSON"),
])
def test_a_damaged_row_of_the_study_database_is_named(tmp_path, capsys, monkeypatch, command, damage, problem):
    """Rows that the schema cannot guard (deleted, or edited with its CHECKs off) were a KeyError in the analysis."""
    study, _ = make_study(tmp_path, 2)
    add_reader(study, "R1")
    conn = db.connect(study / db.DB_NAME)
    try:
        image_id = conn.execute("SELECT id FROM images LIMIT 1").fetchone()[0]
        assert db.record_answer(conn, 1, image_id, "real") == "recorded"
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(damage)
    finally:
        conn.close()
    def served(self, *args, **kwargs):
        raise AssertionError("served a damaged study")  # fails here rather than serving until the test times out

    monkeypatch.setattr(uvicorn.Server, "run", served)
    options = ["--out", str(tmp_path / "report")] if command == "analyze" else []
    refused(["reader-study", command, str(study), *options], tmp_path,
            f"{study / db.DB_NAME}: is damaged ({problem}")


@pytest.mark.parametrize("name", ["a\nb", "a\tb", "a\x1b[31mb", "a\u2028b"])
def test_add_reader_refuses_control_characters_in_a_name(tmp_path, capsys, name):
    """A line break would split the name in the lists and tables it is printed in."""
    study, _ = make_study(tmp_path, 2)
    refused(["reader-study", "add-reader", str(study), name], tmp_path, "field 'name': a reader name must be printable",
            repr(name))
    conn = db.connect(study / db.DB_NAME)
    try:
        with pytest.raises(db.ReaderStudyError, match="must be printable"):
            db.add_reader(conn, name)
    finally:
        conn.close()


@pytest.mark.parametrize("out, words", [
    ("real/manifest.json", ["--out", "manifest.json: is a file, not a folder"]),
    ("real/manifest.json/results", ["--out", "lies under", "manifest.json, which is a file"]),
])
def test_analyze_refuses_an_out_that_cannot_be_a_folder(tmp_path, capsys, out, words):
    study, _ = make_study(tmp_path, 2)
    refused(["reader-study", "analyze", str(study), "--out", str(tmp_path / out)], tmp_path, *words)


@pytest.mark.parametrize("base_url", ["", "notaurl", "http://x/ y", "ftp://host", "http://host:99999"])
@pytest.mark.parametrize("command", ["create", "add-reader"])
def test_a_base_url_that_makes_broken_links_is_refused(tmp_path, capsys, base_url, command):
    if command == "create":
        real, synthetic = make_store(tmp_path / "real", 4, seed=1), make_store(tmp_path / "synthetic", 4, seed=2)
        args = ["create", "--real", str(real), "--synthetic", str(synthetic), "-r", "32", "--out",
                str(tmp_path / "study"), "--n-real", "2", "--n-synthetic", "2"]
    else:
        args = ["add-reader", str(make_study(tmp_path, 2)[0]), "R1"]
    refused(["reader-study", *args, "--base-url", base_url], tmp_path,
            f"--base-url {base_url!r}: not an http(s) address")


@pytest.mark.parametrize("case, words", [
    ("same store", ["field '--synthetic': holds the same images as --real"]),
    ("synthetic as real", ["field '--real': is a synthetic set (synthetic:cpdgan)"]),
])
def test_create_refuses_a_real_store_that_is_not_real(tmp_path, capsys, case, words):
    real, synthetic = make_store(tmp_path / "real", 4, seed=1), make_store(tmp_path / "synthetic", 4, seed=2)
    if case == "same store":
        synthetic = real
    else:
        manifest = json.loads((synthetic / "manifest.json").read_text())
        (synthetic / "manifest.json").write_text(json.dumps({**manifest, "source": "synthetic:cpdgan"}))
        real = synthetic
    refused(["reader-study", "create", "--real", str(real), "--synthetic", str(synthetic), "-r", "32",
                     "--out", str(tmp_path / "study"), "--n-real", "2", "--n-synthetic", "2"], tmp_path, *words)

"""Reader study under load: 50 readers answer 100 images each at once over HTTP on loopback.

Each reader does what the page does: fetch the page, read the image id, post the answer; every
tenth answer is posted twice (a double click). Afterwards the database must hold exactly one row
per (reader, image) with the label that was sent, read right after the server was killed
(SIGKILL, no shutdown), and a server started again sees every reader finished.
"""

from __future__ import annotations

import random
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from helpers import add_reader, make_study, process_server, thread_server
from synthmed.reader_study import db

READERS, IMAGES = 50, 100
IMAGE_ID = re.compile(r'data-image="([A-Za-z0-9_-]{22})"')


def read_all(base: str, token: str, seed: int, start: threading.Barrier) -> tuple[dict[str, str], list[str]]:
    """One reader's session: (image -> label sent, status of every post)."""
    rng = random.Random(seed)
    sent, statuses = {}, []
    with httpx.Client(base_url=f"{base}/r/{token}/", timeout=60) as client:
        start.wait()
        for n in range(IMAGES):
            image_id = IMAGE_ID.search(client.get("").raise_for_status().text).group(1)
            sent[image_id] = rng.choice(("real", "synthetic"))
            for _ in range(2 if n % 10 == 0 else 1):
                response = client.post("answers", json={"image": image_id, "label": sent[image_id]})
                statuses.append(response.raise_for_status().json()["status"])
        assert "All 100 images are labelled" in client.get("").text
    return sent, statuses


@pytest.mark.slow
def test_fifty_readers_at_once_lose_and_duplicate_nothing(tmp_path):
    study, admin_token = make_study(tmp_path, IMAGES // 2)
    start = threading.Barrier(READERS + 1)
    with process_server(study) as (base, process):
        tokens = [add_reader(study, f"R{i}") for i in range(READERS)]  # readers join a running study
        with ThreadPoolExecutor(READERS) as pool:
            sessions = [pool.submit(read_all, base, token, i, start) for i, token in enumerate(tokens)]
            start.wait()
            began = time.perf_counter()
            results = [session.result() for session in sessions]
            seconds = time.perf_counter() - began
        process.kill()  # no shutdown: what was acknowledged must already be on disk
        process.wait()

    statuses = [status for _, session in results for status in session]
    answers = READERS * IMAGES
    assert statuses.count("recorded") == answers and statuses.count("duplicate") == answers // 10
    with sqlite3.connect(study / db.DB_NAME) as conn:
        rows = conn.execute("SELECT r.name, x.image_id, x.label FROM answers x JOIN readers r ON r.id = x.reader_id")
        stored = {(name, image_id): label for name, image_id, label in rows}
        row_count = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    sent = {(f"R{i}", image_id): label for i, (labels, _) in enumerate(results) for image_id, label in labels.items()}
    lost = len(set(sent) - set(stored)) + sum(stored.get(k) != v for k, v in sent.items() if k in stored)
    duplicated = row_count - len(stored)
    print(f"\n{answers} answers (+{answers // 10} double submits) from {READERS} readers in {seconds:.1f} s: "
          f"{answers / seconds:.0f} answers/s, {len(statuses) / seconds:.0f} posts/s; lost {lost}, "
          f"duplicated {duplicated}")
    assert lost == 0 and duplicated == 0 and row_count == answers

    with thread_server(study) as base:  # started again after the kill: everything is still there
        progress = httpx.get(f"{base}/admin/{admin_token}/progress").json()["readers"]
        assert [(r["answered"], r["total"]) for r in progress] == [(IMAGES, IMAGES)] * READERS

"""docker-compose.yml started for real by podman-compose (Debian's package), podman through scripts/podman.sh: the
service built from the repository's Dockerfile and its study store on the compose file's PostgreSQL, here the
image ops/postgres/Dockerfile builds from Debian's postgresql-15 on the same Debian base (postgres:15 is on a
registry this machine cannot reach). An ingest through the service lands in PostgreSQL and is read back, over
HTTP and from the database itself. The compose file's other services need images only a registry has: the last
test names them (it skips here; where a registry is reachable, `docker compose up` starts them all)."""
import os

import httpx
import psycopg
import pytest
import yaml

from conftest import GARMIN_ACC, GARMIN_GYR
from container_helpers import (BUILD_TIMEOUT_S, SERVE_IMAGE, base_image, compose, need_podman_compose, podman,
                               postgres_image, served_model_dir, wait_until_ready)
from ops_helpers import poll, unused_port
from serve_helpers import ROOT, TOKEN
from store_helpers import garmin_slice

READ_TOKEN = "read-only-token-0123456789"
WRITE, READ = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {READ_TOKEN}"}
STARTED = ("serve", "postgres")
# Built here in place of an image a registry holds: the compose variable that names it, and its Dockerfile.
BUILT_HERE = {"postgres": "HAR_POSTGRES_IMAGE"}
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`podman-compose up --build serve postgres` (postgres comes first: serve depends on it) with the service's
    ports on loopback, torn down with its volumes afterwards. Yields the service's URL and PostgreSQL's DSN."""
    need_podman_compose()
    project = f"har-test-{os.getpid()}"
    serve_port, postgres_port = unused_port(), unused_port()
    env = {**os.environ, "HAR_SERVE_TOKEN": TOKEN, "HAR_SERVE_READ_TOKEN": READ_TOKEN,
           "HAR_BASE_IMAGE": base_image(), BUILT_HERE["postgres"]: postgres_image(),
           "HAR_MODEL_DIR": str(served_model_dir(tmp_path_factory.mktemp("models"))),
           "HAR_SERVE_PORT": f"127.0.0.1:{serve_port}", "HAR_POSTGRES_PORT": f"127.0.0.1:{postgres_port}"}
    try:
        compose(project, "up", "--detach", "--build", *STARTED, env=env, timeout=BUILD_TIMEOUT_S)
        base = f"http://127.0.0.1:{serve_port}"
        wait_until_ready(base, f"{project}_serve_1")
        # The compose file's own healthcheck (pg_isready), run on demand: no systemd here to run it on a timer.
        poll(lambda: podman("healthcheck", "run", f"{project}_postgres_1", check=False).returncode == 0,
             timeout_s=60, what="PostgreSQL's healthcheck")
        yield {"project": project, "url": base, "postgres": f"postgresql://har:har@127.0.0.1:{postgres_port}/har"}
    finally:
        compose(project, "down", "--volumes", env=env, check=False)
        podman("network", "rm", f"{project}_default", check=False)


def test_an_ingest_through_the_stack_lands_in_postgresql_and_reads_back(stack, tmp_path):
    acc, gyr = garmin_slice(GARMIN_ACC, GARMIN_GYR, tmp_path, minutes=5)
    files = {"accelerometer": (acc.name, acc.read_bytes()), "gyroscope": (gyr.name, gyr.read_bytes())}
    ingest = httpx.post(f"{stack['url']}/subjects/c1/recordings", files=files, headers=WRITE, timeout=120)
    assert ingest.status_code == 201, ingest.text[:500]
    stored = ingest.json()
    model = httpx.get(f"{stack['url']}/ready", timeout=10).json()

    listed = httpx.get(f"{stack['url']}/subjects/c1/recordings", headers=READ, timeout=30)  # the read-only token
    assert listed.status_code == 200 and [r["content_hash"] for r in listed.json()] == [stored["content_hash"]]

    with psycopg.connect(stack["postgres"], connect_timeout=10) as database:
        rows = database.execute(
            "SELECT p.subject, r.content_hash, r.blob_sha256, s.model_sha256, count(e.id) FROM participants p "
            "JOIN recordings r ON r.participant_id = p.id JOIN scorings s ON s.recording_id = r.id "
            "LEFT JOIN episodes e ON e.scoring_id = s.id GROUP BY p.subject, r.content_hash, r.blob_sha256, "
            "s.model_sha256").fetchall()
    (subject, content_hash, blob, model_sha256, episodes), = rows
    assert (subject, content_hash, model_sha256) == ("c1", stored["content_hash"], model["sha256"])
    assert episodes == len(stored["answer"]["episodes"]) > 0
    # The fused table went to the compose file's `blobs` volume, written by the image's non-root user.
    blobs = podman("exec", f"{stack['project']}_serve_1", "ls", "/app/data/store/blobs").stdout.split()
    assert f"{blob}.parquet" in blobs

    again = httpx.post(f"{stack['url']}/subjects/c1/recordings", files=files, headers=WRITE, timeout=120)
    assert (again.status_code, again.json()["id"]) == (200, stored["id"])  # stored once


def test_the_stack_runs_the_images_built_here(stack):
    images = {service: podman("inspect", "--format", "{{.ImageName}}", f"{stack['project']}_{service}_1").stdout.strip()
              for service in STARTED}
    assert images == {"serve": SERVE_IMAGE, "postgres": postgres_image()}  # har-serve:latest, built by compose


def test_the_services_that_need_a_registry_are_named():
    """Every other service of the compose file runs an image only a registry has, and none is reachable here."""
    others = {name: service["image"] for name, service in COMPOSE["services"].items() if name not in STARTED}
    assert all("build" not in COMPOSE["services"][name] and "${" not in image for name, image in others.items())
    pytest.skip("not started here, their images are only on registries this machine cannot reach: "
                + ", ".join(f"{name} ({image})" for name, image in sorted(others.items()))
                + "; where one is reachable: `docker compose up` (docs/operations.md, \"The image\")")

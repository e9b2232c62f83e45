from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.conftest import COORDINATOR_MD, PATIENT_MD


def test_coordinator_lands_on_patient_list(
    client: TestClient, login_as: Callable[[str], str]
) -> None:
    login_as(COORDINATOR_MD)
    response = client.get("/patients")
    assert response.status_code == 200
    assert "Johnson, Maya" in response.text


def test_patient_lands_home(client: TestClient, login_as: Callable[[str], str]) -> None:
    login_as(PATIENT_MD)
    response = client.get("/home")
    assert response.status_code == 200
    assert "Hello, Maya" in response.text

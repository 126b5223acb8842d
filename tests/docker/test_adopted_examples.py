"""Adopting repositories as they are, for real: the second example (examples/shop, written to its own
conventions) against its real services, serially, under -n 2 and with its workers' data apart; and a
run with --integration whose tests would get a mock never passes."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from integration.discovery import load_system
from integration.harness import RealServiceHarness
from integration.stack import Stack
from tests.docker.compose_projects import leftovers
from tests.docker.example_copies import SHOP, SHORTENER, build, copy_example, run_pytest
from tests.docker.shared_stacks import WORKERS, shared_stack

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MOCK_FIXTURE = """

@pytest.fixture
def test_harness():
    return MockTestHarness()
"""


@pytest.fixture(scope="module")
def built() -> None:
    """Both examples' images, built (or found fresh) once for this module."""
    for root in (SHOP, SHORTENER):
        build(root)


def _copy(source: Path, tmp_path: Path) -> Path:
    return copy_example(source, tmp_path / source.name)


def _pytest(root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if "--integration" in args:
        build(root)  # a copy is a checkout of its own, with image tags of its own (from the build cache)
    return run_pytest(root, tmp_path / "compose", *args)


def _project_of(root: Path) -> str:
    from integration.stack import project_name

    return project_name(load_system(root))


# --- the shop, adopted with a config block, conftest fixture lines and a harness -------------------------


def test_shop_passes_against_its_real_services(built: None, tmp_path: Path):
    root = _copy(SHOP, tmp_path)
    result = _pytest(root, tmp_path, "--integration")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "26 passed" in result.stdout
    assert "/healthz 200" in result.stdout  # orders' own health route, from its services.yml entry
    assert leftovers(_project_of(root)) == []


def test_shop_passes_under_two_workers(built: None, tmp_path: Path):
    root = _copy(SHOP, tmp_path)
    result = _pytest(root, tmp_path, "--integration", "-n", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "26 passed" in result.stdout
    assert "worker gw1:" in result.stdout
    assert leftovers(_project_of(root)) == []


def test_shop_mock_mode_needs_no_toolkit_code(tmp_path: Path):
    root = _copy(SHOP, tmp_path)
    result = _pytest(root, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "26 passed" in result.stdout


# --- a mock can never pass for the real services -----------------------------------------------------


def _shortener_with_its_own_test_harness(tmp_path: Path) -> Path:
    root = _copy(SHORTENER, tmp_path)
    conftest = root / "use_case_tests" / "conftest.py"
    conftest.write_text(conftest.read_text() + MOCK_FIXTURE)
    return root


def _shop_before_adoption(tmp_path: Path) -> Path:
    root = _copy(SHOP, tmp_path)
    conftest = root / "tests" / "use_cases" / "conftest.py"
    text = conftest.read_text()
    start = text.index("@pytest.fixture\ndef test_harness(request):")
    conftest.write_text(text[:start] + MOCK_FIXTURE.lstrip("\n"))
    return root


@pytest.mark.parametrize(
    "make", [_shortener_with_its_own_test_harness, _shop_before_adoption], ids=["shortener", "shop"]
)
def test_a_conftest_test_harness_returning_the_mock_never_passes(built: None, tmp_path: Path, make):
    root = make(tmp_path)
    result = _pytest(root, tmp_path, "--integration")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "gave a MockTestHarness, not the real services' harness" in output
    assert "conftest.py" in output and "integration_test_harness" in output  # where, and the fix
    assert re.search(r"\d+ passed", output) is None
    assert "no tests ran" in output
    assert "Traceback" not in output
    assert leftovers(_project_of(root)) == []


def test_tests_that_never_reach_the_services_fail_the_run(built: None, tmp_path: Path):
    root = _copy(SHORTENER, tmp_path)
    (root / "use_case_tests" / "test_plain.py").write_text("def test_nothing_real():\n    assert True\n")
    result = _pytest(root, tmp_path, "--integration", "use_case_tests/test_plain.py")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "none of them used the real services" in result.stdout


def test_a_conftest_with_its_own_integration_option_keeps_it(tmp_path: Path):
    root = _copy(SHORTENER, tmp_path)
    conftest = root / "use_case_tests" / "conftest.py"
    conftest.write_text(
        conftest.read_text()
        + "\n\ndef pytest_addoption(parser):\n"
        + '    parser.addoption("--integration", action="store_true", default=False, help="real mode")\n'
    )
    result = _pytest(root, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "43 passed" in result.stdout
    assert "already" not in result.stderr


# --- the shop's workers in one shared stack never reach each other's data ---------------------------------


class OrderPlaced(BaseModel):
    model_config = ConfigDict(extra="allow")
    order_id: str


class OrderCancelled(OrderPlaced):
    pass


class ShopHarness(RealServiceHarness):
    """Raw JSON calls: this module imports no contract, so the two examples' `architecture` packages
    never meet in one interpreter."""

    event_types = {"OrderPlaced": OrderPlaced, "OrderCancelled": OrderCancelled}

    def stock(self, sku: str) -> dict:
        return self.call("inventory", "GET", f"/stock/{sku}")

    def set_stock(self, sku: str, quantity: int) -> None:
        self.call("inventory", "PUT", f"/stock/{sku}", json={"sku": sku, "quantity": quantity})

    def order(self, sku: str, quantity: int) -> dict:
        return self.call("orders", "POST", "/orders", json={"sku": sku, "quantity": quantity})


@pytest.fixture(scope="module")
def shop_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with shared_stack(
        SHOP, tmp_path_factory.mktemp("compose"), port_base=45100, prefix="itest-shop"
    ) as stack:
        yield stack


def test_each_workers_orders_calls_its_own_inventory(shop_stack: Stack):
    text = shop_stack.compose_file.read_text()
    assert "INVENTORY_API: http://inventory:8081" in text
    assert "INVENTORY_API: http://inventory-gw1:8081" in text
    assert "AMQP_URL: amqp://guest:guest@broker:5672/gw1" in text
    assert "DB_NAME: inventory_gw1" in text


def test_calls_events_and_resets_stay_within_their_worker(shop_stack: Stack):
    zero, one = (ShopHarness(shop_stack.worker_endpoints[w]) for w in WORKERS)
    try:
        zero.reset_sync()
        one.reset_sync()
        zero.set_stock("sku-a", 5)
        placed = zero.order("sku-a", 2)
        # orders of gw0 reserved in inventory of gw0 only: gw1's inventory never heard of the sku.
        assert zero.stock("sku-a")["reserved"] == 2
        with pytest.raises(KeyError):
            one.stock("sku-a")
        with pytest.raises(KeyError):
            one.order("sku-a", 1)  # gw1's orders asks gw1's inventory, which has no such sku

        one.set_stock("sku-a", 7)
        theirs = one.order("sku-a", 3)
        one.call("orders", "POST", f"/orders/{theirs['order_id']}/cancel")
        asyncio.run(one.wait_for_events_processed(timeout=30))
        assert one.stock("sku-a")["reserved"] == 0  # released by gw1's consumer, through vhost gw1
        assert zero.stock("sku-a")["reserved"] == 2, "gw1's OrderCancelled reached gw0's inventory"

        mine = [type(e).__name__ for e in zero.published_events_sync()]
        assert mine == ["OrderPlaced"]
        assert [e.order_id for e in zero.published_events_sync()] == [placed["order_id"]]
        assert [type(e).__name__ for e in one.published_events_sync()] == ["OrderPlaced", "OrderCancelled"]

        one.reset_sync()
        assert zero.stock("sku-a")["reserved"] == 2, "a reset of gw1 removed gw0's data"
    finally:
        zero.close()
        one.close()

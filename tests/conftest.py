from pathlib import Path

import pytest

from oodseg.datasets import Scene, load_indian_pines

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def indian_pines() -> Scene:
    return load_indian_pines()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared real data, beside the checkout; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the shared data folder is not beside this checkout")
    return SHARED_DATA

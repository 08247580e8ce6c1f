import gymnasium as gym
import pytest

TOY_ID = "OPIDTest/KeyDoor-v0"
if TOY_ID not in gym.registry:
    gym.register(id=TOY_ID, entry_point="tests.toy_env:KeyDoorEnv")


@pytest.fixture
def toy_id():
    return TOY_ID


@pytest.fixture(scope="module")
def private_opid_cache(tmp_path_factory):
    """Point $OPID_CACHE at a fresh folder for one test module (indexes, suites, analyses)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPID_CACHE", str(tmp_path_factory.mktemp("opid-cache")))
        yield

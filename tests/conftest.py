import gymnasium as gym
import pytest

TOY_ID = "OPIDTest/KeyDoor-v0"
if TOY_ID not in gym.registry:
    gym.register(id=TOY_ID, entry_point="tests.toy_env:KeyDoorEnv")


@pytest.fixture
def toy_id():
    return TOY_ID

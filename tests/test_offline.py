import os


def test_conftest_forces_offline_mode():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert os.environ["WANDB_MODE"] == "disabled"
    import huggingface_hub.constants as c

    assert c.HF_HUB_OFFLINE

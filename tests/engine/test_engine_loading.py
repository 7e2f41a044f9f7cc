import torch
from hydra.utils import instantiate

from patchwork.engine.checkpoint import save_checkpoint
from patchwork.engine.loading import load_model
from patchwork.models import mobilenet_v2

def test_a_checkpoint_loads_without_the_initial_weights_its_model_was_built_from(tmp_path):
    # A model config naming an initial-weights file (e.g. LFS's f0 from the single-frame backbone)
    # must not need that file once the checkpoint holds the trained weights.
    torch.manual_seed(0)
    init = tmp_path / "init.pt"
    torch.save(mobilenet_v2(0.35).state_dict(), init)
    config = {"model": {"_target_": "patchwork.models.builders.patchwork_detector", "grid": [1, 1],
                        "width_mult": 0.35, "num_classes": 3, "weights": str(init)},
              "data": {"image_size": [64, 64]}}

    model = instantiate(config["model"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # trained weights differ from the initial ones
    checkpoint = save_checkpoint(tmp_path / "last.pt", {"models": {"model": model.state_dict()}, "config": config,
                                                        "stage": "stage1"})
    init.unlink()
    loaded = load_model(checkpoint).model.state_dict()
    assert loaded.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())

"""ClipEncoder: a tiny random-init CLIP vision tower saved locally and built by the factory."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rlaif.core.protocols import Encoder  # noqa: E402
from rlaif.core.records import VideoRef  # noqa: E402
from rlaif.plugins.encoders.clip import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    build_clip,
    clip_preprocess,
    video_chatgpt_pool,
)


class FakeBenchmark:
    """Only ``frames``: random uint8 frames, deterministic per video id."""

    def frames(self, video, n_frames=None):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(abs(hash(video.video_id)) % 2**32)
        return rng.integers(0, 256, size=(n_frames or 4, 24, 40, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=16,
    )
    path = tmp_path_factory.mktemp("clip")
    transformers.CLIPVisionModel(config).save_pretrained(path)
    return str(path)


def test_video_chatgpt_pool_hand_computed():
    # T=2 frames, P=3 patches, D=1: temporal = per-frame means, spatial = per-patch means.
    x = torch.tensor([[[1.0], [2.0], [3.0]], [[5.0], [6.0], [10.0]]])
    out = video_chatgpt_pool(x)
    assert out.squeeze(-1).tolist() == [2.0, 7.0, 3.0, 4.0, 6.5]


def test_preprocess_shape_and_normalisation():
    frames = np.full((3, 20, 50, 3), 255, dtype=np.uint8)
    pixels = clip_preprocess(frames, 32)
    assert pixels.shape == (3, 3, 32, 32)
    expected = (1.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(pixels[0, :, 5, 5], expected, atol=1e-4)
    with pytest.raises(ValueError):
        clip_preprocess(np.zeros((3, 20, 20), dtype=np.uint8), 32)


def test_factory_loads_local_path_and_pools(clip_dir):
    encoder = build_clip(clip_dir, n_frames=4, benchmark=FakeBenchmark())
    assert isinstance(encoder, Encoder)
    assert encoder.feature_dim == 32 and encoder.n_patches == 16
    assert not any(p.requires_grad for p in encoder.model.parameters())

    video = VideoRef(video_id="v1", path="v1.mp4")
    features = encoder.encode_video(video)
    assert features.shape == (4 + 16, 32) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert encoder.n_tokens(4) == features.shape[0]

    # The pooled tokens are exactly means of the selected (layer -2, CLS dropped) patches.
    frames = FakeBenchmark().frames(video, 4)
    patches = encoder.patch_features(frames)
    assert patches.shape == (4, 16, 32)
    assert torch.allclose(features[:4], patches.mean(1), atol=1e-6)
    assert torch.allclose(features[4:], patches.mean(0), atol=1e-6)

    # Layer -2 is what was asked for, and it differs from the last layer.
    pixels = clip_preprocess(frames, 32)
    with torch.no_grad():
        hidden = encoder.model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert torch.allclose(patches, hidden[-2][:, 1:], atol=1e-6)
    assert not torch.allclose(patches, hidden[-1][:, 1:])

    # Any number of frames works; T changes only the temporal part.
    assert encoder.encode(FakeBenchmark().frames(video, 2)).shape == (2 + 16, 32)


def test_encode_video_decodes_through_the_benchmark(clip_dir):
    encoder = build_clip(clip_dir, n_frames=2, benchmark=FakeBenchmark())
    assert encoder.encode_video(VideoRef(video_id="v", path="v.mp4")).shape == (2 + 16, 32)


def test_registering_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, rlaif.plugins.encoders, rlaif.plugins.policies; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_encode_video_without_benchmark_is_a_clear_error(clip_dir):
    encoder = build_clip(clip_dir, select_layer=-1)
    with pytest.raises(RuntimeError, match="benchmark"):
        encoder.encode_video(VideoRef(video_id="v", path="v.mp4"))

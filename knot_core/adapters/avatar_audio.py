"""AvatarForcing's additive audio injection, as a DrivingAdapter.

Reference: AvatarForcing (audio-driven portrait on Wan2.1-1.3B; FIELD_NOTES §3). Four consecutive
wav2vec2 rows (4 × 10752) are packed into one 32-d token per latent frame by `audio_proj`
(Linear 43008 → 32, then LayerNorm); before each of blocks 2..15 the token is projected by
`audio_cond_projs.{i}` (Linear 32 → dim) and added to every spatial token of its frame.
Weight-compatible with AvatarForcing's `audio_proj.*` / `audio_cond_projs.*` keys (the DiT holds
this module as `driving.avatar_audio`, so the keys map by that prefix).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from ..driving import DrivingAdapter
from ..errors import CheckpointError, InputError
from .registry import AdapterSpec, register_adapter


@dataclass(frozen=True)
class AvatarAudioConfig:
    """Sizes of the injection; defaults are AvatarForcing's (wav2vec2-base rows, Wan2.1-1.3B width)."""

    feature_dim: int = 10752  # (num_hidden_layers + 2) · hidden_size of wav2vec2-base
    rows_per_token: int = 4  # video frames per latent frame (VAE temporal stride)
    token_dim: int = 32
    dim: int = 1536
    first_block: int = 2
    num_blocks: int = 14

    def __post_init__(self) -> None:
        for name in ("feature_dim", "rows_per_token", "token_dim", "dim", "num_blocks"):
            if getattr(self, name) < 1:
                raise InputError(f"AvatarAudioConfig.{name}={getattr(self, name)}; must be >= 1")
        if self.first_block < 0:
            raise InputError(f"AvatarAudioConfig.first_block={self.first_block}; must be >= 0")

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], *, rows_per_token: int = 4, first_block: int = 2
                        ) -> AvatarAudioConfig:
        """Sizes read from AvatarForcing's `audio_proj.*` / `audio_cond_projs.*` tensors (prefix stripped)."""
        if "audio_proj.proj.weight" not in state:
            raise CheckpointError("no 'audio_proj.proj.weight' in the checkpoint; it is not an AvatarForcing model")
        token_dim, packed = state["audio_proj.proj.weight"].shape
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("audio_cond_projs.")}
        if packed % rows_per_token or not blocks or blocks != set(range(len(blocks))):
            raise CheckpointError(f"audio_proj.proj takes {packed} inputs and audio_cond_projs has indices "
                                  f"{sorted(blocks)}; expected a multiple of {rows_per_token} and 0..n-1")
        dim = state["audio_cond_projs.0.weight"].shape[0]
        return cls(feature_dim=packed // rows_per_token, rows_per_token=rows_per_token, token_dim=token_dim,
                   dim=dim, first_block=first_block, num_blocks=len(blocks))


class AudioProj(nn.Module):
    """[B, F, rows, feature] -> one normalised token [B, F, token_dim] per latent frame."""

    def __init__(self, cfg: AvatarAudioConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.rows_per_token * cfg.feature_dim, cfg.token_dim)
        self.norm_out = nn.LayerNorm(cfg.token_dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.norm_out(self.proj(features.flatten(2)))  # [B, F, token_dim]


class AvatarAudioAdapter(DrivingAdapter):
    signal = "audio"
    adapter_type = "avatar_audio"

    def __init__(self, cfg: AvatarAudioConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or AvatarAudioConfig()
        self.audio_proj = AudioProj(self.cfg)
        self.audio_cond_projs = nn.ModuleList(nn.Linear(self.cfg.token_dim, self.cfg.dim)
                                              for _ in range(self.cfg.num_blocks))

    def encode(self, features: Tensor) -> Tensor:
        """Per-latent-frame audio rows [B, F, rows, feature] -> tokens [B, F, token_dim]."""
        cfg = self.cfg
        if features.ndim != 4 or features.shape[2:] != (cfg.rows_per_token, cfg.feature_dim):
            raise InputError(f"avatar audio adapter: features {tuple(features.shape)}; need [B, F, "
                             f"{cfg.rows_per_token}, {cfg.feature_dim}] (wav2vec2 rows of a model with the "
                             "checkpoint's feature size)")
        return self.audio_proj(features.to(self.audio_proj.proj.weight.dtype))

    def before_block(self, index: int, x: Tensor, tokens: Tensor, active: Tensor | None) -> Tensor:
        slot = index - self.cfg.first_block
        if not 0 <= slot < self.cfg.num_blocks:
            return x
        b, frames = tokens.shape[:2]
        if x.shape[1] % frames:
            raise InputError(f"avatar audio adapter: {x.shape[1]} tokens do not split into {frames} frames")
        added = self.audio_cond_projs[slot](tokens)  # [B, F, dim]
        if active is not None:
            added = added * active.to(added.dtype)[None, :, None]
        out = x.view(b, frames, x.shape[1] // frames, x.shape[2]) + added[:, :, None].to(x.dtype)  # [B, F, S, dim]
        return out.view_as(x)


def _config_from_shapes(shapes, dit_cfg) -> dict:
    token_dim, packed = shapes["audio_proj.proj.weight"]
    blocks = {int(k.split(".")[1]) for k in shapes if k.startswith("audio_cond_projs.")}
    if packed % 4 or blocks != set(range(len(blocks))) or not blocks:
        raise CheckpointError(f"audio_proj.proj takes {packed} inputs and audio_cond_projs has indices "
                              f"{sorted(blocks)}; expected a multiple of 4 and 0..n-1 (AvatarForcing's layout)")
    return asdict(AvatarAudioConfig(feature_dim=packed // 4, token_dim=token_dim, dim=dit_cfg.dim,
                                    num_blocks=len(blocks)))


register_adapter(AdapterSpec("avatar_audio", lambda data, dit_cfg: AvatarAudioAdapter(AvatarAudioConfig(**data)),
                             _config_from_shapes, lambda module: asdict(module.cfg)), replace=True)

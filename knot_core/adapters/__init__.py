"""DrivingAdapters that feed driving-signal features into the DiT (see knot_core.driving)."""

from .avatar_audio import AvatarAudioAdapter, AvatarAudioConfig
from .cross_attention import CrossAttentionAdapter, CrossAttentionConfig

__all__ = ["AvatarAudioAdapter", "AvatarAudioConfig", "CrossAttentionAdapter", "CrossAttentionConfig"]

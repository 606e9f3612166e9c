"""The Knot Forcing loop, and nothing else: open this package first.

Reading order (each module is one idea):

1. ``stream.py``       -- the numbered chunk loop (``start_stream`` / ``generate``) for every strategy.
2. ``sampler.py``      -- one chunk: few-step denoising (x0 prediction, re-noise) and the clean commit pass.
3. ``conditioning.py`` -- what goes into the model's inpainting channels: the knot (and known frames).
4. ``schedule.py``     -- the flow-matching timesteps and the running-ahead rule for the reference index.
5. ``visibility.py``   -- per strategy, what each forward attends to and where the anchor sits.
6. ``memory.py``       -- the global anchor and the sliding window as the model sees them, per chunk.
7. ``kv_store.py``     -- the per-layer K/V buffers laid out ``[anchor | window | own frames]``.
8. ``state.py``        -- everything needed to stop and resume a stream, as one safetensors file.
9. ``noise.py``        -- the one source of random draws (seeded, replayable).

The model (``knot_core.dit``), checkpoint formats, media I/O, driving signals and rendering live outside.
"""

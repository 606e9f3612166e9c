"""Live: a portrait that answers in real time (audio in, video out), in a browser, from a program, from ComfyUI.

Reading order: ``stream.py`` (the live stream over the one render path), ``audio_input.py`` (pushed audio on
the stream clock, bounded; causal loudness), ``driving.py`` (what the audio drives), ``recorder.py`` (MP4 as it
goes), ``protocol.py`` (the WebSocket API's messages), ``server.py`` (routes, several streams),
``websocket_api.py`` and ``webrtc.py`` (one client of each kind; aiohttp / aiortc are imported lazily),
``demo.py`` (the built-in model, live: `python -m knot_core live`).
"""

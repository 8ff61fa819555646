//! Load tools: real WebSocket and WebRTC clients that drive a running server and print figures.

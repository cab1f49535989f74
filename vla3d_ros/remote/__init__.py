"""The policy over a websocket: `vla3d serve` on a GPU workstation, the ROS graph on the robot PC.

ROS-free. The wire is openpi's client protocol (`openpi_client.websocket_client_policy`), so
`openpi-client` users can call a vla3d policy and a vla3d graph could call any server speaking it:

- `protocol` msgpack with numpy arrays (no pickle), size caps, and the vla3d observation / reply /
             metadata dicts carried over it.
- `server`   `PolicyServer`: serves any `infer(Observation) -> dict` policy; loopback by default,
             a shared token for anything else.
- `client`   `RemotePolicy`: the same `infer(Observation) -> dict` interface as an in-process policy,
             with a reply timeout, reconnection with backoff and a metadata check against the
             runtime config, so the inference node's `PolicyRunner` guards it like a local one.
"""

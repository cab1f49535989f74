"""The benchmark harness, ROS-free part (`vla3d bench` writes bench/results.{json,md}).

- `stats`          percentiles, peak RSS, process CPU use, the machine description.
- `model_latency`  per-module forward latency at deploy resolution, the 3D add-on's share,
                   parameter counts, a torch.profiler table (`profile_policy`).
- `fastpath`       each deployment fast-path claim measured; bf16 autocast and torch.compile
                   (`compile_runner`) checked against the eager fp32 runner.
- `training`       training throughput: matmul peak (fp32, bf16), samples/s per stage on a synthetic
                   batch and through `vla3d train` on generated episodes, fraction of peak.
- `op_counts`      aten ops and FLOPs of a call (load-independent: dispatch-bound or compute-bound?).
- `report`         results.json / results.md / plots, targets and their verdicts.
The DDS parts (node overhead on real messages, end-to-end latency, sustained camera load) need
rclpy and live in `vla3d_ros.apps.bench_graph`.
"""

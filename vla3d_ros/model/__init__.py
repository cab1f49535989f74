"""The 3DVLA policy in PyTorch (METHOD.md §1-5, §7): ROS-free, tensors in, tensors out.

One module per component of the method: `geometry_ops` (shared torch geometry), `fusion` (§1),
`instances` (§2), `matching` (§2.9-2.10), and the policy-side modules built on them. Nothing is
imported eagerly so that importing one component never pulls in the others.
"""

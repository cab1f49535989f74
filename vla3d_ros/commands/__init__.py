"""`vla3d` subcommands: thin argument parsing around the packages; see vla3d_ros/cli.py."""

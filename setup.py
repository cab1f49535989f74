"""pip metadata for vla3d_ros (the ROS 2 build is CMakeLists.txt + package.xml).

`./run setup` installs this in editable mode into .venv so that `vla3d` is on PATH; the messages
are generated separately by rosidl (see vla3d_ros/_interfaces.py for how they are found).
"""
from setuptools import find_packages, setup

setup(
    name="vla3d_ros",
    version="0.1.0",
    description="3D-aware vision-language-action policy as a ROS 2 component",
    license="Apache-2.0",
    author="vla3d_ros maintainers",
    author_email="maintainers@vla3d-ros.dev",
    python_requires=">=3.10",
    packages=find_packages(include=["vla3d_ros", "vla3d_ros.*"]),
    package_data={"vla3d_ros": ["assets/**/*"]},
    include_package_data=True,
    entry_points={"console_scripts": ["vla3d = vla3d_ros.cli:main"]},
    classifiers=["License :: OSI Approved :: Apache Software License"],
)

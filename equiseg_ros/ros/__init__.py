"""See DESIGN.md: equiseg_ros.ros."""

"""See DESIGN.md: equiseg_ros.sensors."""

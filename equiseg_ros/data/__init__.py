"""See DESIGN.md: equiseg_ros.data."""

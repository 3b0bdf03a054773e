"""See DESIGN.md: equiseg_ros.inference."""

"""See DESIGN.md: equiseg_ros.bag."""

"""See DESIGN.md: equiseg_ros.evaluation."""

"""Dashboards as code: the W&B view of ssaf runs (``ssaf-dashboard``), built from ``ssaf.keys``' names."""

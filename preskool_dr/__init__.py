"""preskool-dr: backup and disaster recovery for the PreSkool ERP database."""

__version__ = "0.1.0"

"""Files: event samples from numpy, HDF5, parquet and ROOT (events.py), and fitted models saved and
loaded without pickle (models.py)."""

from .events import load_events
from .models import load_model, save_model

__all__ = ["load_events", "load_model", "save_model"]

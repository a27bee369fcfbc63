"""The full-screen restore checklist (Textual). Everything here is UI; the work is in core."""

"""The lifecycle report: the headline figures of every stage on one page."""

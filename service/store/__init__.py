"""The job store: SQLAlchemy models and a repository of plain records."""

"""Where the catalog's data lives and how it is asked: tables, the database, filters, the sky index, packets on disk."""

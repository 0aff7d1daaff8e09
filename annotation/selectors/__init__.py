"""Read side: what pages, endpoints and services look up, never a write (STYLE rule 1)."""

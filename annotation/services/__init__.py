"""Write services: each checks, then writes inside its own transaction (STYLE rule 3)."""

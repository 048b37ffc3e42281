"""The seed's example models and walkthrough (used by ``python -m aegis_tortoise demo``)."""

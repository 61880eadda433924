"""Model zoo: plain-torch feature extractors of published reference networks."""

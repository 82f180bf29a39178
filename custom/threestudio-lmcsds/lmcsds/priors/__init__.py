"""Offline priors: data sets (procedural 3D objects), their cameras, renderer and classifier."""

"""Detector families beyond a backbone with a linear head: see each module."""

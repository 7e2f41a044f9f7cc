"""Benchmark tables of one method each (cost and latency per paper configuration), for scripts/.

Unlike the shared harness, these know their method's parts (window grids, extractors, blocks).
"""

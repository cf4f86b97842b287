"""Runnable jobs of ead-harness: tasks, the tiny policy, RLVR training, studies and evaluation."""

"""Datasets: each option returns (images, labels) batches for training and evaluation."""

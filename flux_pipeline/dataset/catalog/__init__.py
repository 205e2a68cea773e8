"""What was made: the lineage catalog, its row writers, axes, reviewers' decisions, gallery and previews."""

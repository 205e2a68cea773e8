"""What it cost: prices, estimates before anything is sent, cost views, reconciliation with fal's bills."""

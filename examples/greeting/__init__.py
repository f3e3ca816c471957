"""A complete example operator on kaito.runtime: ``Greeting`` → an owned ConfigMap + status."""

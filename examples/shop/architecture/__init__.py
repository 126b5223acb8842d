"""Architecture of the shop: the service catalogue (services.yml) and the contracts."""

"""Building blocks shared by generators and discriminators."""

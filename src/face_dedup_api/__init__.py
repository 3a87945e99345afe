"""The review API (and the console it serves): routes over the core, for API Gateway in the cloud
and for `face-dedup serve` on one machine. Kept outside `face_dedup` because it is built on
Powertools' event handler: the core imports nothing of Lambda's."""

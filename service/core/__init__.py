"""The application core: every use case of the service without HTTP (detect, verify, identify, enrol, gallery
management), the face path they share, and the one wiring module that builds them from the settings and the
model manifest. Front ends (the REST API today) parse their input, call the core and shape its answers."""

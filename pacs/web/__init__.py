"""The Flask service (DICOMweb, WADO, rendering, viewer): built in the DICOMweb issue."""

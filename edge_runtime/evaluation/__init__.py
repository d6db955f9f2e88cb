"""Labels, COCO metrics, validation of a package against labelled images, the chart."""

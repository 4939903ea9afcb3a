"""The application: analysis configs and `nplm run`, the demonstration, the printed reports and
the plots."""

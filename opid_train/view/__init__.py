"""opid-view: the local page that shows what a run did (`opid_train.view.app`)."""
